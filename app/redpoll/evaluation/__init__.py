"""Offline evaluation: replay a real data set through the ingestion path and score the
recommendation endpoints against baselines (`redpoll evaluate`, docs/recommendations.md)."""
