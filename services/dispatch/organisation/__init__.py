"""The organisation: ``chart`` is the domain model (departments on five tiers over the area
tree, loaded from YAML and checked), ``store`` is its database side (loading the demo city,
rebuilding the chart from the tables, reads), ``admin`` the validated changes operators make,
and ``cache`` the chart and rules in force, rebuilt when their revision moves."""
