"""Request schemas (pydantic): validation with field-named errors, and the OpenAPI document."""
