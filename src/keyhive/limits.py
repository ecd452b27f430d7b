"""Every numeric limit Keyhive enforces, each with its source.

Field lengths and ranges that botocore's KMS model states (KeyId 1..2048,
NumberOfBytes 1..1024, Limit 1..1000, ...) are enforced from the model itself by
``keyhive.protocol.shapes``; this module holds what the model does not say.
"""

# Encrypt: "Encrypts plaintext of up to 4,096 bytes" (KMS API reference, Encrypt).
MAX_PLAINTEXT_BYTES = 4096

SECONDS_PER_DAY = 86400.0

# ScheduleKeyDeletion PendingWindowInDays: 7..30, default 30 (API reference).
MIN_PENDING_WINDOW_DAYS = 7
MAX_PENDING_WINDOW_DAYS = 30
DEFAULT_PENDING_WINDOW_DAYS = 30

# EnableKeyRotation RotationPeriodInDays: 90..2560, default 365 (API reference).
MIN_ROTATION_PERIOD_DAYS = 90
MAX_ROTATION_PERIOD_DAYS = 2560
DEFAULT_ROTATION_PERIOD_DAYS = 365

# RotateKeyOnDemand: "You can perform on-demand key rotation a maximum of 10 times per KMS
# key" (KMS API reference, RotateKeyOnDemand; newer guide pages allow more).
MAX_ON_DEMAND_ROTATIONS = 10

# GenerateDataKey KeySpec AES_128 / AES_256 (API reference).
DATA_KEY_SPEC_BYTES = {"AES_128": 16, "AES_256": 32}

# Tags: "Maximum of 50 tags per KMS key"; key 1..128, value 0..256 Unicode chars
# (KMS developer guide, Tagging keys; the model gives the lengths too).
MAX_TAGS_PER_KEY = 50

# List* defaults when Limit is absent: "the default value is 100" (API reference).
DEFAULT_LIST_LIMIT = 100

# Encryption context: AWS publishes no byte limit; Keyhive bounds the total
# (keys + values, UTF-8) so a ciphertext's associated data stays small.
MAX_ENCRYPTION_CONTEXT_BYTES = 8192

# Ciphertext blobs: CiphertextBlob is 1..6144 bytes in the model.
MAX_CIPHERTEXT_BLOB_BYTES = 6144

# Signature V4: requests signed more than 5 minutes from server time are refused (AWS).
MAX_CLOCK_SKEW_SECONDS = 300

# Request bodies: well above the largest valid KMS request (6144-byte blob, base64,
# plus context), small enough that a hostile client cannot exhaust memory.
MAX_REQUEST_BODY_BYTES = 256 * 1024
