"""Password rules of sign-up that JSON Schema cannot state (docs/openapi.yaml states them in
prose): a password equal to the email address or its local part, or longer than
`auth.password.max_bytes` (256 by default) in UTF-8, is refused with 422. Schemathesis must not
send such a body as a schema-valid one and expect it to be accepted."""

import schemathesis

MAX_BYTES = 256


@schemathesis.hook
def filter_body(context, body):
    operation = context.operation
    if operation is None or operation.path != "/api/auth/signup" or not isinstance(body, dict):
        return True
    email, password = body.get("email"), body.get("password")
    if not isinstance(email, str) or not isinstance(password, str):
        return True
    address = email.strip().lower()
    local = address.rsplit("@", 1)[0]
    return password.lower() not in (address, local) and len(password.encode()) <= MAX_BYTES
