import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_ses_peer.settings")
application = get_wsgi_application()


def _warm_certificate_cache():
    """django-ses fetches a SigningCertURL once per process and keeps it in
    its module's cache; the benchmark may not reach AWS, so each worker
    starts with the TEST-ONLY certificate already in that cache, as bouncer
    starts with it pinned. Nothing else of django-ses is changed."""
    from cryptography import x509
    from django_ses import utils

    with open(os.environ["PEER_CERT_FILE"], "rb") as pem:
        cert = x509.load_pem_x509_certificate(pem.read())
    utils._CERT_CACHE[os.environ["PEER_CERT_URL"]] = cert


_warm_certificate_cache()
