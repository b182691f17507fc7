from klaviyo_leads.results import lambda_handler

__all__ = ["lambda_handler"]
