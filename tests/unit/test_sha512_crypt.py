"""SHA-512 crypt matches the reference vectors of the spec and glibc/busybox output."""

import re

from agent.core.sha512_crypt import sha512_crypt


def test_reference_vector_from_the_spec():
    assert sha512_crypt("Hello world!", "saltstring") == (
        "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1")


def test_reference_vector_with_rounds():
    assert sha512_crypt("Hello world!", "saltstringsaltstring", rounds=10000) == (
        "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vO"
        "uZeHBy/YTBmSK6H9qs/y3RnOaw5v.")


def test_random_salt_is_sixteen_chars_and_differs():
    a, b = sha512_crypt("pw"), sha512_crypt("pw")
    assert a != b
    assert re.fullmatch(r"\$6\$[./0-9A-Za-z]{16}\$[./0-9A-Za-z]{86}", a)
