"""The customer balance: money owed to a customer, per currency, as a ledger
(`BalanceTransaction`). A balance credit note adds to it, a finalized invoice spends it before
anything is collected, a voided invoice gives back what it spent. The balance is the sum of the
ledger, so every cent of it has a reason.

Spending takes a transaction-scoped advisory lock per (customer, currency): two invoices of the
same customer finalized at once can't both spend the same credit. An advisory lock rather than
the customer's row lock, because metering's writers lock customer rows in their own order
(metering.locks) and a cycle close grants meter credits after it finalizes."""

from decimal import Decimal

from django.db import connection
from django.db.models import Sum

from billing.models import BalanceTransaction
from billing.money import minor_factor, round_minor, to_money

# advisory key namespace (second argument of hashtextextended), apart from metering's 7-9
BALANCE_NAMESPACE = 21
LOCK_SQL = f"SELECT pg_advisory_xact_lock(hashtextextended(%s::text, {BALANCE_NAMESPACE}))"


def lock(customer_id, currency: str) -> None:
    assert connection.in_atomic_block, "the balance lock lasts until the transaction ends"
    with connection.cursor() as cursor:
        cursor.execute(LOCK_SQL, [f"{customer_id}:{currency.upper()}"])


def available(customer_id, currency: str) -> int:
    """The customer's balance in `currency`, in minor units."""
    total = BalanceTransaction.objects.filter(
        customer_id=customer_id, currency=currency.upper()
    ).aggregate(total=Sum("amount"))["total"]
    return 0 if total is None else _minor(total, currency)


def _minor(amount: Decimal, currency: str) -> int:
    return round_minor(amount * minor_factor(currency))


def balances(customer_id) -> dict[str, int]:
    """currency → balance in minor units, for every currency the customer has a ledger in."""
    rows = (
        BalanceTransaction.objects.filter(customer_id=customer_id)
        .values("currency")
        .annotate(total=Sum("amount"))
        .order_by("currency")
    )
    return {row["currency"]: _minor(row["total"], row["currency"]) for row in rows}


def credit(customer_id, currency: str, minor: int, *, credit_note=None, invoice=None):
    return BalanceTransaction.objects.create(
        customer_id=customer_id,
        currency=currency.upper(),
        amount=to_money(minor, currency),
        credit_note=credit_note,
        invoice=invoice,
    )


def spend(customer_id, currency: str, up_to: int, *, invoice) -> int:
    """Spend up to `up_to` minor units of the balance on `invoice` (caller's transaction, which
    holds the lock until it ends); returns what was spent."""
    if up_to <= 0 or available(customer_id, currency) <= 0:
        return 0  # most customers have no balance: no lock for them (a credit added meanwhile
        # is spent by the next invoice)
    lock(customer_id, currency)
    spent = min(available(customer_id, currency), up_to)
    if spent > 0:
        credit(customer_id, currency, -spent, invoice=invoice)
    return max(spent, 0)
