"""ISO 4217 currency codes a shop can take money in.

The active list (ISO 4217 amendment 179, 2025: ``XCG`` and ``ZWG`` in, ``ANG`` kept while it
is still withdrawn in stages), with ``HRK`` and ``SLL`` kept for orders placed before their
withdrawal. Left out on purpose: precious metals (``XAU``, ``XAG``, ``XPD``, ``XPT``), bond
market units (``XBA``-``XBD``), ``XDR``, ``XSU``, ``XUA``, the testing code ``XTS`` and ``XXX``
(no currency): no shop order is priced in those.
"""

from __future__ import annotations

__all__ = ["ISO_4217"]

ISO_4217 = frozenset(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD
    BTN BWP BYN BZD CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE CZK DJF DKK DOP
    DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HRK HTG HUF IDR ILS
    INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD
    MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD OMR
    PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS
    SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU UYW
    UZS VED VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG ZWL
    """.split()  # noqa: SIM905 - 170 codes read better as a table than as a list literal
)
