"""Flask extensions, created unbound here and bound to each app in ``create_app`` (flaskr style)."""

from __future__ import annotations

from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_wtf.csrf import CSRFProtect

login_manager = LoginManager()
csrf = CSRFProtect()
# In-memory counters: throttling is per process, which is what one console server needs.
limiter = Limiter(key_func=get_remote_address, storage_uri="memory://")
