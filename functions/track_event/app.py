from klaviyo_leads.entrypoint import handler_for

lambda_handler = handler_for("track_event")
