from klaviyo_leads.handlers.mirror import lambda_handler

__all__ = ["lambda_handler"]
