"""The composition root: the one place that knows every service.

``registry`` maps each service to its settings, app factory, migrations and commands; ``cli`` is
the ``fengqiao`` command; ``supervisor`` runs the broker and the service processes. ``shared/``
is a library that knows no service; ``services/<name>/`` know only ``shared/``.
"""
