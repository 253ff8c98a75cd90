"""The smallest Django project that runs django-ses's SNS event webhook the
way its README sets it up, as the peer of benches/throughput.rs
(`BENCH_PEER=django-ses`): signatures verified, permanent bounces and
complaints added to its blacklist table. Everything else is Django's
production defaults (DEBUG off, no access log)."""

import os
from urllib.parse import urlparse

SECRET_KEY = "benchmark-peer-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["django_ses"]
MIDDLEWARE = []
ROOT_URLCONF = "django_ses_peer.urls"
USE_TZ = True

# The same work bouncer does for these messages, as far as django-ses does
# it: verify each signature, keep the addresses to stop sending to.
AWS_SES_VERIFY_EVENT_SIGNATURES = True
AWS_SES_ADD_BOUNCE_TO_BLACKLIST = True
AWS_SES_ADD_COMPLAINT_TO_BLACKLIST = True
AWS_SNS_EVENT_CERT_TRUSTED_DOMAINS = ["sns.us-east-1.amazonaws.com"]

url = urlparse(os.environ["PEER_DATABASE_URL"])
if url.scheme == "sqlite":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": url.path,
            # Several gunicorn workers write one file: WAL, IMMEDIATE
            # transactions and a busy timeout, as Django's docs advise;
            # synchronous=FULL as bouncer runs it (each commit durable).
            "OPTIONS": {
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
            },
            # One connection per worker, kept, as on PostgreSQL: without
            # it Django opens the file and runs the PRAGMAs per request.
            "CONN_MAX_AGE": None,
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": url.path.lstrip("/"),
            "USER": url.username or "postgres",
            "PASSWORD": url.password or "",
            "HOST": url.hostname,
            "PORT": url.port or 5432,
            # One connection per worker, kept, as in production.
            "CONN_MAX_AGE": None,
        }
    }

# django-ses warns on every message whose SigningCertURL names a
# certificate other than SimpleNotificationService-<hex>.pem, as the
# TEST-ONLY one does; real AWS messages never would, so that warning is
# left out of what the peer is measured doing.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": "WARNING"},
    "loggers": {"django_ses": {"level": "ERROR"}},
}
