# Credit notes, the customer balance ledger, refunded and due amounts on invoices, and pending
# items that carry the usage of a voided invoice.

import billing.money
import core.db
import django.db.models.deletion
import djmoney.models.fields
import djmoney.money
import uuid
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0006_exact_units_copies_and_flags"),
        ("customers", "0003_organization_invoice_address"),
        ("metering", "0007_event_arrival_txid"),
    ]

    operations = [
        migrations.CreateModel(
            name="CreditNote",
            fields=[
                (
                    "id",
                    models.UUIDField(
                        default=uuid.uuid4, editable=False, primary_key=True, serialize=False
                    ),
                ),
                ("number", models.CharField(max_length=40)),
                ("sequence", models.PositiveIntegerField()),
                (
                    "kind",
                    models.CharField(
                        choices=[("refund", "Refund"), ("balance", "Customer balance")],
                        max_length=16,
                    ),
                ),
                (
                    "amount_currency",
                    djmoney.models.fields.CurrencyField(
                        choices=billing.money.currency_choices,
                        default=None,
                        editable=False,
                        max_length=3,
                    ),
                ),
                (
                    "amount",
                    djmoney.models.fields.MoneyField(
                        currency_choices=billing.money.currency_choices,
                        decimal_places=2,
                        max_digits=19,
                    ),
                ),
                (
                    "tax_amount_currency",
                    djmoney.models.fields.CurrencyField(
                        choices=billing.money.currency_choices,
                        default=None,
                        editable=False,
                        max_length=3,
                    ),
                ),
                (
                    "tax_amount",
                    djmoney.models.fields.MoneyField(
                        currency_choices=billing.money.currency_choices,
                        decimal_places=2,
                        max_digits=19,
                    ),
                ),
                ("currency", models.CharField(max_length=3)),
                ("reason", models.CharField(max_length=64)),
                ("comment", models.TextField(blank=True, default="")),
                ("refund_id", models.UUIDField(blank=True, null=True, unique=True)),
                ("lines", models.JSONField(default=list)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("emailed_at", models.DateTimeField(blank=True, null=True)),
                (
                    "customer",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="credit_notes",
                        to="customers.customer",
                    ),
                ),
            ],
        ),
        migrations.CreateModel(
            name="CreditNoteCounter",
            fields=[
                (
                    "organization",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="+",
                        serialize=False,
                        to="customers.organization",
                    ),
                ),
                ("prefix", models.CharField(max_length=24)),
                ("last_number", models.PositiveIntegerField(default=0)),
            ],
        ),
        migrations.AddField(
            model_name="invoice",
            name="amount_due",
            field=djmoney.models.fields.MoneyField(
                currency_choices=billing.money.currency_choices,
                decimal_places=2,
                default=djmoney.money.Money(0, "USD"),
                default_currency="USD",
                max_digits=19,
            ),
        ),
        migrations.AddField(
            model_name="invoice",
            name="amount_due_currency",
            field=djmoney.models.fields.CurrencyField(
                choices=billing.money.currency_choices, default="USD", editable=False, max_length=3
            ),
        ),
        migrations.AddField(
            model_name="invoice",
            name="balance_applied",
            field=djmoney.models.fields.MoneyField(
                currency_choices=billing.money.currency_choices,
                decimal_places=2,
                default=djmoney.money.Money(0, "USD"),
                default_currency="USD",
                max_digits=19,
            ),
        ),
        migrations.AddField(
            model_name="invoice",
            name="balance_applied_currency",
            field=djmoney.models.fields.CurrencyField(
                choices=billing.money.currency_choices, default="USD", editable=False, max_length=3
            ),
        ),
        migrations.AddField(
            model_name="invoice",
            name="credited_amount",
            field=djmoney.models.fields.MoneyField(
                currency_choices=billing.money.currency_choices,
                decimal_places=2,
                default=djmoney.money.Money(0, "USD"),
                default_currency="USD",
                max_digits=19,
            ),
        ),
        migrations.AddField(
            model_name="invoice",
            name="credited_amount_currency",
            field=djmoney.models.fields.CurrencyField(
                choices=billing.money.currency_choices, default="USD", editable=False, max_length=3
            ),
        ),
        migrations.AddField(
            model_name="invoice",
            name="credited_tax_amount",
            field=djmoney.models.fields.MoneyField(
                currency_choices=billing.money.currency_choices,
                decimal_places=2,
                default=djmoney.money.Money(0, "USD"),
                default_currency="USD",
                max_digits=19,
            ),
        ),
        migrations.AddField(
            model_name="invoice",
            name="credited_tax_amount_currency",
            field=djmoney.models.fields.CurrencyField(
                choices=billing.money.currency_choices, default="USD", editable=False, max_length=3
            ),
        ),
        migrations.AddField(
            model_name="invoice",
            name="refunded_amount",
            field=djmoney.models.fields.MoneyField(
                currency_choices=billing.money.currency_choices,
                decimal_places=2,
                default=djmoney.money.Money(0, "USD"),
                default_currency="USD",
                max_digits=19,
            ),
        ),
        migrations.AddField(
            model_name="invoice",
            name="refunded_amount_currency",
            field=djmoney.models.fields.CurrencyField(
                choices=billing.money.currency_choices, default="USD", editable=False, max_length=3
            ),
        ),
        migrations.AddField(
            model_name="invoice",
            name="refunded_tax_amount",
            field=djmoney.models.fields.MoneyField(
                currency_choices=billing.money.currency_choices,
                decimal_places=2,
                default=djmoney.money.Money(0, "USD"),
                default_currency="USD",
                max_digits=19,
            ),
        ),
        migrations.AddField(
            model_name="invoice",
            name="refunded_tax_amount_currency",
            field=djmoney.models.fields.CurrencyField(
                choices=billing.money.currency_choices, default="USD", editable=False, max_length=3
            ),
        ),
        migrations.AddField(
            model_name="pendinginvoiceitem",
            name="meter",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="metering.meter",
            ),
        ),
        migrations.AddField(
            model_name="pendinginvoiceitem",
            name="quantity",
            field=core.db.ExactDecimalField(default=1),
        ),
        migrations.CreateModel(
            name="CreditNoteDocument",
            fields=[
                (
                    "credit_note",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="document",
                        serialize=False,
                        to="billing.creditnote",
                    ),
                ),
                ("pdf", models.BinaryField()),
                ("created_at", models.DateTimeField(auto_now_add=True)),
            ],
        ),
        migrations.AddField(
            model_name="creditnote",
            name="invoice",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="credit_notes",
                to="billing.invoice",
            ),
        ),
        migrations.AddField(
            model_name="creditnote",
            name="organization",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="credit_notes",
                to="customers.organization",
            ),
        ),
        migrations.CreateModel(
            name="BalanceTransaction",
            fields=[
                (
                    "id",
                    models.UUIDField(
                        default=uuid.uuid4, editable=False, primary_key=True, serialize=False
                    ),
                ),
                ("currency", models.CharField(max_length=3)),
                (
                    "amount_currency",
                    djmoney.models.fields.CurrencyField(
                        choices=billing.money.currency_choices,
                        default=None,
                        editable=False,
                        max_length=3,
                    ),
                ),
                (
                    "amount",
                    djmoney.models.fields.MoneyField(
                        currency_choices=billing.money.currency_choices,
                        decimal_places=2,
                        max_digits=19,
                    ),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "customer",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="balance_transactions",
                        to="customers.customer",
                    ),
                ),
                (
                    "invoice",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="billing.invoice",
                    ),
                ),
                (
                    "credit_note",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="billing.creditnote",
                    ),
                ),
            ],
        ),
        migrations.AddIndex(
            model_name="creditnote",
            index=models.Index(
                fields=["organization", "-created_at"], name="credit_note_org_created"
            ),
        ),
        migrations.AddConstraint(
            model_name="creditnote",
            constraint=models.UniqueConstraint(
                fields=("organization", "sequence"), name="credit_note_sequence_unique_per_org"
            ),
        ),
        migrations.AddConstraint(
            model_name="creditnote",
            constraint=models.CheckConstraint(
                condition=models.Q(("amount__gt", 0)), name="credit_note_amount_positive"
            ),
        ),
        migrations.AddIndex(
            model_name="balancetransaction",
            index=models.Index(fields=["customer", "currency"], name="balance_customer"),
        ),
        # existing invoices: nothing spent or credited, due what they total, in their currency
        migrations.RunSQL(
            """
            UPDATE billing_invoice SET
                amount_due = total,
                amount_due_currency = total_currency,
                balance_applied_currency = total_currency,
                credited_amount_currency = total_currency,
                credited_tax_amount_currency = total_currency,
                refunded_amount_currency = total_currency,
                refunded_tax_amount_currency = total_currency
            """,
            migrations.RunSQL.noop,
        ),
        migrations.AlterField(
            model_name="invoice",
            name="amount_due",
            field=djmoney.models.fields.MoneyField(
                currency_choices=billing.money.currency_choices, decimal_places=2, max_digits=19
            ),
        ),
        migrations.AlterField(
            model_name="invoice",
            name="amount_due_currency",
            field=djmoney.models.fields.CurrencyField(
                choices=billing.money.currency_choices, default=None, editable=False, max_length=3
            ),
        ),
        migrations.AlterField(
            model_name="invoice",
            name="balance_applied",
            field=djmoney.models.fields.MoneyField(
                currency_choices=billing.money.currency_choices, decimal_places=2, max_digits=19
            ),
        ),
        migrations.AlterField(
            model_name="invoice",
            name="balance_applied_currency",
            field=djmoney.models.fields.CurrencyField(
                choices=billing.money.currency_choices, default=None, editable=False, max_length=3
            ),
        ),
        migrations.AlterField(
            model_name="invoice",
            name="credited_amount",
            field=djmoney.models.fields.MoneyField(
                currency_choices=billing.money.currency_choices, decimal_places=2, max_digits=19
            ),
        ),
        migrations.AlterField(
            model_name="invoice",
            name="credited_amount_currency",
            field=djmoney.models.fields.CurrencyField(
                choices=billing.money.currency_choices, default=None, editable=False, max_length=3
            ),
        ),
        migrations.AlterField(
            model_name="invoice",
            name="credited_tax_amount",
            field=djmoney.models.fields.MoneyField(
                currency_choices=billing.money.currency_choices, decimal_places=2, max_digits=19
            ),
        ),
        migrations.AlterField(
            model_name="invoice",
            name="credited_tax_amount_currency",
            field=djmoney.models.fields.CurrencyField(
                choices=billing.money.currency_choices, default=None, editable=False, max_length=3
            ),
        ),
        migrations.AlterField(
            model_name="invoice",
            name="refunded_amount",
            field=djmoney.models.fields.MoneyField(
                currency_choices=billing.money.currency_choices, decimal_places=2, max_digits=19
            ),
        ),
        migrations.AlterField(
            model_name="invoice",
            name="refunded_amount_currency",
            field=djmoney.models.fields.CurrencyField(
                choices=billing.money.currency_choices, default=None, editable=False, max_length=3
            ),
        ),
        migrations.AlterField(
            model_name="invoice",
            name="refunded_tax_amount",
            field=djmoney.models.fields.MoneyField(
                currency_choices=billing.money.currency_choices, decimal_places=2, max_digits=19
            ),
        ),
        migrations.AlterField(
            model_name="invoice",
            name="refunded_tax_amount_currency",
            field=djmoney.models.fields.CurrencyField(
                choices=billing.money.currency_choices, default=None, editable=False, max_length=3
            ),
        ),
    ]
