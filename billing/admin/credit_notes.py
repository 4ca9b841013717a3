"""Credit notes in the admin (read-only: issued by the credit note service, never edited), their
PDF, the inline on an invoice, and the customer balance on a customer's page."""

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from billing import balance, documents
from billing.admin.display import amount_cell, day, money, money_minor
from billing.models import BalanceTransaction, CreditNote
from core.admin import MeterlineModelAdmin, ReadOnlyAdminMixin
from customers.admin import register_activity_section


def pdf_link(note: CreditNote | None) -> str:
    if note is None or note.pk is None:
        return "—"
    return format_html(
        '<a href="{}">{}</a>', reverse("admin:billing_creditnote_pdf", args=[note.pk]), "Open PDF"
    )


class CreditNoteInline(admin.TabularInline):
    model = CreditNote
    extra = 0
    can_delete = False
    fields = (
        "number",
        "kind",
        "amount_display",
        "tax_display",
        "reason",
        "refund_id",
        "issued",
        "pdf",
    )
    readonly_fields = fields
    show_change_link = True

    @admin.display(description="Amount")
    def amount_display(self, obj):
        return amount_cell(money(obj.amount))

    @admin.display(description="Tax")
    def tax_display(self, obj):
        return amount_cell(money(obj.tax_amount))

    @admin.display(description="Issued")
    def issued(self, obj):
        return day(obj.created_at)

    @admin.display(description="PDF")
    def pdf(self, obj):
        return pdf_link(obj)

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(CreditNote)
class CreditNoteAdmin(ReadOnlyAdminMixin, MeterlineModelAdmin):
    list_display = (
        "number",
        "invoice",
        "customer",
        "kind",
        "amount_display",
        "reason",
        "created_at",
    )
    list_filter = ("kind", "reason")
    list_select_related = ("invoice", "customer")
    search_fields = ("=number", "=invoice__number", "customer__email")
    ordering = ("-created_at",)
    show_full_result_count = False

    def get_readonly_fields(self, request, obj=None):
        return [*(field.name for field in CreditNote._meta.fields), "pdf"]

    def get_urls(self):
        pdf = path(
            "<uuid:credit_note_id>/pdf/",
            self.admin_site.admin_view(self.pdf_view),
            name="billing_creditnote_pdf",
        )
        return [pdf, *super().get_urls()]

    def pdf_view(self, request, credit_note_id):
        note = self.get_object(request, str(credit_note_id))
        if note is None or not self.has_view_permission(request, note):
            raise PermissionDenied
        response = HttpResponse(documents.credit_note_pdf(note.pk), content_type="application/pdf")
        response["Content-Disposition"] = (
            f'inline; filename="{documents.credit_note_filename(note)}"'
        )
        return response

    @admin.display(description="PDF")
    def pdf(self, obj):
        return pdf_link(obj)

    @admin.display(description="Amount", ordering="amount")
    def amount_display(self, obj):
        return amount_cell(money(obj.amount))


RECENT_MOVEMENTS = 20


def balance_section(customer) -> str:
    """The customer's balance per currency and its latest movements (read-only)."""
    balances = balance.balances(customer.pk)
    if not balances:
        return format_html("<p>{}</p>", "No customer balance.")
    totals = format_html_join(
        "",
        "<li><strong>{}</strong></li>",
        ((format_amount_minor(a, c),) for c, a in balances.items()),
    )
    movements = (
        BalanceTransaction.objects.filter(customer=customer)
        .select_related("credit_note", "invoice")
        .order_by("-created_at")[:RECENT_MOVEMENTS]
    )
    rows = format_html_join(
        "",
        '<tr><td class="ml-nowrap">{}</td><td class="ml-num">{}</td><td>{}</td></tr>',
        (
            (
                f"{movement.created_at:%Y-%m-%d %H:%M}",
                money(movement.amount),
                _source(movement),
            )
            for movement in movements
        ),
    )
    return format_html(
        "<ul>{}</ul><table><thead><tr><th>when</th><th>amount</th><th>from</th></tr></thead>"
        "<tbody>{}</tbody></table>",
        totals,
        rows,
    )


def format_amount_minor(minor: int, currency: str) -> str:
    return money_minor(minor, currency)


def _source(movement: BalanceTransaction) -> str:
    if movement.credit_note is not None:
        return f"credit note {movement.credit_note.number}"
    if movement.invoice is not None:
        spent = movement.amount.amount < 0
        return f"{'spent on' if spent else 'given back by void of'} {movement.invoice.number}"
    return "—"


register_activity_section("Customer balance", balance_section, order=30)
