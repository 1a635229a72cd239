"""Grafana dashboards as code and their provisioning (datasource and dashboard providers).

The provisioning files under ``provisioning/`` are mounted by docker-compose; generated
dashboard JSON goes to ``json/``.
"""
