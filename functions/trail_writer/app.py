from klaviyo_leads.handlers.trail import lambda_handler

__all__ = ["lambda_handler"]
