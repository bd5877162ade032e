"""The API's OpenAPI 3.1 description, generated from the pydantic models the handlers read and
answer with, and the browsable page that renders it."""
