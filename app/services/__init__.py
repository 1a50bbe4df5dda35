"""The domain: plain functions free of request objects. Views call them; they own the transaction."""


class DomainError(Exception):
    """An error a person can act on; blueprints map `code` to a status and show `message`."""

    code = "error"
    status = 400

    def __init__(self, message: str, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status:
            self.status = status
