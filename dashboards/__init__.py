"""Grafana dashboards and alert rules as code, their provisioning (datasource, dashboard
providers, alert rules), and the static HTML report of the same panels.

The provisioning files under ``provisioning/`` are mounted by docker-compose; generated
dashboard JSON goes to ``json/``.
"""
