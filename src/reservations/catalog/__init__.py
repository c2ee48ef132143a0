"""The catalog: the resource rows every domain reads (repository.py, SQL) and their copy in the
Redis tier for the hot paths (cache.py). The resources domain (resources/) manages them through
the API; everything that books reads them from here."""
