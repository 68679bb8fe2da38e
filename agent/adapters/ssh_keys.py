"""The SshKeys port on pyca/cryptography: RSA keys made as Nova makes them at 2.1
(2048 bits; the private key in the traditional "BEGIN RSA PRIVATE KEY" PEM that ssh and
paramiko read; the public line "ssh-rsa AAAA... Generated-by-Nova"), and public keys
checked by parsing them, then fingerprinted as nova.crypto does (MD5 of the key blob)."""

from __future__ import annotations

import base64
import binascii
import hashlib

from agent.model.keypair import GeneratedKey

# pyca/cryptography (~1 MiB of the daemon's own memory) is imported on the first keypair
# made or checked, not with the daemon: most daemons never handle one.

RSA_BITS = 2048
GENERATED_COMMENT = "Generated-by-Nova"  # what Nova's generated public keys end with


def md5_fingerprint(public_key: str) -> str:
    """MD5 of the base64 blob (the second field), as aa:bb:...; the text must already
    have been checked to be a public key."""
    blob = base64.b64decode(public_key.split()[1], validate=True)
    # MD5 here is a fingerprint format (Nova's, and ssh-keygen -E md5), not a protection.
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


class CryptographySshKeys:
    def generate(self) -> GeneratedKey:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        private = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption()).decode("ascii")
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH).decode("ascii")
        return GeneratedKey(public_key=f"{public} {GENERATED_COMMENT}", private_key=private)

    def fingerprint(self, public_key: str) -> str:
        from cryptography.exceptions import UnsupportedAlgorithm
        from cryptography.hazmat.primitives import serialization
        try:
            serialization.load_ssh_public_key(public_key.strip().encode("utf-8"))
            return md5_fingerprint(public_key)
        except (ValueError, TypeError, IndexError, binascii.Error,
                UnicodeEncodeError, UnsupportedAlgorithm):
            # The library's message may quote the input: say only that it is not a key.
            raise ValueError("not an OpenSSH public key") from None
