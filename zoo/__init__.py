"""The embedded tiny cascade: its synthetic domain, training code, judge and report (``make zoo``)."""
