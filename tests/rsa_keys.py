"""Throwaway RSA keys for the GitHub App tests, made here with the standard library (no
key is kept in the repository): Miller-Rabin primes, PKCS #1 DER, PEM."""

from __future__ import annotations

import base64
import math
import secrets
from functools import cache

_SMALL_PRIMES = [p for p in range(3, 2000) if all(p % d for d in range(2, int(p ** 0.5) + 1))]


def _probably_prime(n: int, rounds: int = 40) -> bool:
    if any(n % p == 0 for p in _SMALL_PRIMES):
        return n in _SMALL_PRIMES
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for _ in range(rounds):
        x = pow(secrets.randbelow(n - 3) + 2, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _prime(bits: int, e: int) -> int:
    while True:
        candidate = secrets.randbits(bits) | (3 << (bits - 2)) | 1
        if _probably_prime(candidate) and math.gcd(candidate - 1, e) == 1:
            return candidate


def _der_int(value: int) -> bytes:
    body = value.to_bytes(value.bit_length() // 8 + 1, "big")
    return b"\x02" + _der_len(len(body)) + body


def _der_len(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _der_seq(*items: bytes) -> bytes:
    body = b"".join(items)
    return b"\x30" + _der_len(len(body)) + body


def _pem(label: str, der: bytes) -> str:
    text = base64.b64encode(der).decode()
    lines = [text[i:i + 64] for i in range(0, len(text), 64)]
    return "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----", ""])


@cache
def rsa_key(bits: int = 2048, seed: int = 0) -> tuple[str, str, int, int]:
    """(PKCS #1 PEM, PKCS #8 PEM, n, e) of a fresh key; ``seed`` tells keys apart."""
    del seed
    e = 65537
    while True:
        p, q = _prime(bits // 2, e), _prime(bits // 2, e)
        n = p * q
        if p != q and n.bit_length() == bits:
            break
    d = pow(e, -1, (p - 1) * (q - 1))
    pkcs1 = _der_seq(*(_der_int(v) for v in (0, n, e, d, p, q, d % (p - 1), d % (q - 1),
                                               pow(q, -1, p))))
    algorithm = _der_seq(bytes.fromhex("06092a864886f70d010101"), b"\x05\x00")
    pkcs8 = _der_seq(_der_int(0), algorithm, b"\x04" + _der_len(len(pkcs1)) + pkcs1)
    return _pem("RSA PRIVATE KEY", pkcs1), _pem("PRIVATE KEY", pkcs8), n, e


def public_pem(n: int, e: int) -> str:
    """SubjectPublicKeyInfo PEM, for ``openssl dgst -verify``."""
    algorithm = _der_seq(bytes.fromhex("06092a864886f70d010101"), b"\x05\x00")
    key = _der_seq(_der_int(n), _der_int(e))
    return _pem("PUBLIC KEY", _der_seq(algorithm, b"\x03" + _der_len(len(key) + 1) + b"\x00"
                                       + key))
