from klaviyo_leads.mirror import lambda_handler

__all__ = ["lambda_handler"]
