"""Presentation: what a user reads (report.html and its charts, every number's format); no rules decided here."""
