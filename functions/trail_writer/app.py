from klaviyo_leads.trail_delivery import lambda_handler

__all__ = ["lambda_handler"]
