from klaviyo_leads.handlers.lead_files import assemble_handler, split_handler

__all__ = ["assemble_handler", "split_handler"]
