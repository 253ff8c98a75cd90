from django.urls import path
from django_ses.views import SESEventWebhookView

urlpatterns = [path("sns", SESEventWebhookView.as_view())]
