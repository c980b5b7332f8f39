"""A cheaper salted hasher for station passwords (docs/contract.md §1 allows it; choice stated here).

Station passwords are 16-40 characters of high-entropy text (OCPP's BasicAuthPassword and
AuthorizationKey), so a brute-force search is infeasible whatever the work factor: a few
thousand PBKDF2 rounds keep the hash salted and slow enough against a leaked table of weak
human passwords, while a reconnect storm of 2,000 stations right after a restart costs ~1 s of
CPU instead of ~9 CPU-minutes with Django's default 1,000,000+ iterations (docs/performance.md).
Humans keep Django's default hasher.
"""

from django.contrib.auth.hashers import PBKDF2PasswordHasher


class StationPasswordHasher(PBKDF2PasswordHasher):
    algorithm = "pbkdf2_sha256_station"
    iterations = 5000
