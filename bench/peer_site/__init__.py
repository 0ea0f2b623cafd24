"""The peer: a minimal Django project serving django-helpdesk's ticket API (bench/peer_helpdesk.py).

Runs in its own virtualenv (bench/.peer), never imported by the suite."""
