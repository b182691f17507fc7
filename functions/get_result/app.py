from klaviyo_leads.handlers.results import lambda_handler

__all__ = ["lambda_handler"]
