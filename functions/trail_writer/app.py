from klaviyo_leads.trail.delivery import lambda_handler

__all__ = ["lambda_handler"]
