from klaviyo_leads.aws.result_store import lambda_handler

__all__ = ["lambda_handler"]
