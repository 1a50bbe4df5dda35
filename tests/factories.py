"""factory_boy factories for the models, writing through the app's session."""

import factory
from factory.alchemy import SQLAlchemyModelFactory
from werkzeug.security import generate_password_hash

from app.extensions import db
from app.models import User

#: The scrypt hash of "correct horse", made once for every factory user: hashing costs ~0.1 s of CPU each time, and
#: logging in still checks the hash in full.
CORRECT_HORSE_HASH = generate_password_hash("correct horse")


class UserFactory(SQLAlchemyModelFactory):
    class Meta:
        model = User
        sqlalchemy_session_factory = lambda: db.session  # noqa: E731
        sqlalchemy_session_persistence = "commit"

    email = factory.Sequence(lambda n: f"user{n}@example.com")
    is_admin = False
    password_hash = CORRECT_HORSE_HASH
