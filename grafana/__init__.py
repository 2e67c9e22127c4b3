"""Grafana boards as code: the dashboards (generated into dashboards/), provisioning and sync."""
