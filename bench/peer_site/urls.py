"""The peer's URLs: django-helpdesk under /helpdesk/, as its documentation mounts it."""

from django.urls import include, path

urlpatterns = [path("helpdesk/", include("helpdesk.urls", namespace="helpdesk"))]
