from klaviyo_leads.lead_files import assemble_handler, split_handler

__all__ = ["assemble_handler", "split_handler"]
