"""Shared by the compare-etcd scripts: how a cell of their side-by-side tables is written."""
import statistics


def cell(vals, fmt):
    """The median of the runs and, in brackets, the smallest and largest; n/a without runs."""
    vals = [v for v in vals if v is not None]
    if not vals:
        return "n/a"
    med = statistics.median(vals)
    if len(vals) == 1:
        return fmt(med)
    return f"{fmt(med)} [{fmt(min(vals))}..{fmt(max(vals))}]"


def ops(v):
    return f"{v:,.0f}"


def ms(us):
    return f"{us / 1000:.2f} ms"
