"""Reports: booked time over open time, per resource, tag, local day or week."""
