from klaviyo_leads.handlers.actions import handler_for

lambda_handler = handler_for("subscribe_profile_to_list")
