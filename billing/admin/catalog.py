"""The catalog in the admin: products with their prices inline (and a tier editor), benefits,
discounts and tax rates. Every save goes through the catalog, discount and tax services — the
same ones the API calls — so a rule refused there (a price in use edited in place, another
organization's meter, an interval changed under live subscriptions, a redeemed discount's
terms) shows on the form and nothing is written."""

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError

from billing import catalog, discounts, taxes
from billing.catalog import PriceSpec
from billing.errors import BillingError
from billing.models import Benefit, Discount, DiscountType, Price, PriceType, Product, TaxRate
from billing.money import to_minor
from core.admin import NUMBER_FIELDS, MeterlineModelAdmin, add_domain_errors
from core.display import money, percent, plain, unit_price
from core.errors import DomainError
from metering.models import Meter


class TiersField(forms.CharField):
    """The tier editor: one tier per line, `up to | unit amount (cents) | flat amount (cents)`;
    the last line's bound is `*` (unbounded). The first line may name the mode: `graduated` or
    `volume`."""

    widget = forms.Textarea(
        attrs={"rows": 4, "cols": 48, "placeholder": "graduated\n10 | 1000 | 200\n* | 500"}
    )

    def prepare_value(self, value):
        if isinstance(value, str) or not value:
            return value or ""
        lines = [value["type"]]
        for tier in value["tiers"]:
            bound = "*" if tier["bound"] is None else str(tier["bound"])
            parts = [bound, str(tier["unit_amount"])]
            if tier.get("flat_amount"):
                parts.append(str(tier["flat_amount"]))
            lines.append(" | ".join(parts))
        return "\n".join(lines)

    def to_python(self, value):
        text = (value or "").strip()
        if not text:
            return None
        rows = [line.strip() for line in text.splitlines() if line.strip()]
        kind = "graduated"
        if rows[0] in ("graduated", "volume"):
            kind, rows = rows[0], rows[1:]
        tiers = []
        for number, row in enumerate(rows, start=1):
            parts = [part.strip() for part in row.split("|")]
            if len(parts) not in (2, 3):
                raise ValidationError(
                    f"Line {number}: expected 'up to | unit amount [| flat amount]'"
                )
            bound = None if parts[0] in ("*", "") else parts[0]
            try:
                tier = {"bound": int(bound) if bound is not None else None, "unit_amount": parts[1]}
                if len(parts) == 3 and parts[2]:
                    tier["flat_amount"] = int(parts[2])
            except ValueError:
                raise ValidationError(f"Line {number}: bounds and flat amounts are whole numbers")
            tiers.append(tier)
        try:
            return catalog.normalize_tiers({"type": kind, "tiers": tiers}, ("tiers",))
        except BillingError as exc:
            raise ValidationError(f"{' → '.join(map(str, exc.field))}: {exc.message}")


# the catalog's names for what the price form calls otherwise
PRICE_FIELDS = {"meter_id": "meter"}


class PriceForm(forms.ModelForm):
    """One price; `spec` is what the catalog service is given (amounts in minor units)."""

    tiers = TiersField(required=False)

    class Meta:
        model = Price
        fields = ("amount_type", "price_amount", "meter", "unit_amount", "tiers", "cap_amount")
        labels = {"unit_amount": "Unit amount (cents)"}

    def clean(self):
        data = super().clean()
        self.spec = None
        kind = data.get("amount_type")
        required = {
            PriceType.FIXED: ("price_amount",),
            PriceType.METERED_UNIT: ("meter", "unit_amount"),
            PriceType.METERED_TIERS: ("meter", "tiers"),
        }.get(kind, ())
        missing = [name for name in required if data.get(name) in (None, "")]
        for name in missing:
            self.add_error(name, f"A {kind.replace('_', ' ')} price needs this.")
        if kind and not missing and not self.errors:
            try:
                self.spec = self._spec(kind, data)
            except DomainError as exc:
                add_domain_errors(self, exc, PRICE_FIELDS)
        return data

    @staticmethod
    def _spec(kind: str, data: dict) -> PriceSpec:
        fixed = kind == PriceType.FIXED
        cap = data.get("cap_amount")
        return PriceSpec(
            amount_type=kind,
            price_amount=catalog.minor_amount(to_minor(data["price_amount"]), ("price_amount",))
            if fixed
            else None,
            meter_id=None if fixed else data["meter"].pk,
            unit_amount=catalog.parse_rate(data["unit_amount"], ("unit_amount",))
            if kind == PriceType.METERED_UNIT
            else None,
            tiers=data["tiers"] if kind == PriceType.METERED_TIERS else None,
            cap_amount=catalog.minor_amount(to_minor(cap), ("cap_amount",))
            if cap is not None and not fixed
            else None,
        )

    def currencies(self) -> set[str]:
        return {
            str(money.currency)
            for money in (
                self.cleaned_data.get("price_amount"),
                self.cleaned_data.get("cap_amount"),
            )
            if money is not None
        }


class PriceFormSet(forms.BaseInlineFormSet):
    """The product's live prices: checked together as the catalog checks a product's prices."""

    def add_fields(self, form, index):
        super().add_fields(form, index)
        # only the product's organization's meters (the autocomplete lists every meter staff
        # may see; choosing another organization's is refused here)
        form.fields["meter"].queryset = Meter.objects.filter(
            organization_id=self.instance.organization_id
        )

    def live_forms(self):
        return [
            (index, form)
            for index, form in enumerate(self.forms)
            if form.has_changed() or form.instance.pk
            if not self._should_delete_form(form)
        ]

    def clean(self):
        super().clean()
        product = self.instance
        if any(self.errors) or product.organization_id is None:
            return
        for _index, form in self.live_forms():
            other = form.currencies() - {product.currency}
            if other:
                form.add_error(None, f"The product bills in {product.currency}, not {min(other)}.")
        specs = []
        for index, form in self.live_forms():
            if form.spec is not None:
                form.spec.loc = (index,)
                specs.append(form.spec)
        try:
            catalog.check_prices(organization=product.organization, specs=specs)
        except DomainError as exc:
            index = exc.field[0] if exc.field and isinstance(exc.field[0], int) else None
            target = self.forms[index] if index is not None else None
            if target is None:
                raise ValidationError(exc.message)
            add_domain_errors(target, exc, PRICE_FIELDS)

    def save_through_catalog(self, product: Product) -> None:
        """The edits as the catalog applies them: a price in use is replaced, not edited."""
        added, changed, removed = [], {}, []
        originals = Price.objects.in_bulk([f.instance.pk for f in self.forms if f.instance.pk])
        for form in self.forms:
            original = originals.get(form.instance.pk)
            if original is not None and self._should_delete_form(form):
                removed.append(original)
            elif original is not None and form.has_changed():
                changed[original] = form.spec
            elif original is None and form.has_changed() and not self._should_delete_form(form):
                added.append(form.spec)
        if added or changed or removed:
            catalog.change_prices(product=product, added=added, changed=changed, removed=removed)
        # what the admin's change message reports (a formset's save() would have set these)
        self.new_objects = list(product.prices.filter(is_archived=False).exclude(pk__in=originals))
        self.changed_objects = [(price, ["terms"]) for price in changed]
        self.deleted_objects = removed


class PriceInline(admin.TabularInline):
    model = Price
    form = PriceForm
    formset = PriceFormSet
    extra = 0
    autocomplete_fields = ("meter",)
    show_change_link = False
    formfield_overrides = NUMBER_FIELDS
    readonly_fields = ("per_unit", "unit_amount_cents")
    verbose_name_plural = "Prices (a price in use is archived and replaced when you change it)"

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .filter(is_archived=False)
            .select_related("meter", "product")
        )

    def get_fields(self, request, obj=None):
        fields = [*PriceForm.Meta.fields, "per_unit"]
        if not self.has_change_permission(request, obj):
            # read-only, the stored rate would print with its 12 places: its digits instead
            fields[fields.index("unit_amount")] = "unit_amount_cents"
        return fields

    @admin.display(description="Unit amount (cents)")
    def unit_amount_cents(self, price):
        return plain(price.unit_amount) if price.unit_amount is not None else "—"

    @admin.display(description="Per unit")
    def per_unit(self, price):
        """The unit amount as the invoice writes it (0.5 cents: "0.005 USD")."""
        if price is None or price.pk is None or price.unit_amount is None:
            return "—"
        return unit_price(price.unit_amount, price.product.currency)


class ProductForm(forms.ModelForm):
    class Meta:
        model = Product
        fields = (
            "organization",
            "name",
            "description",
            "recurring_interval",
            "recurring_interval_count",
            "trial_interval",
            "trial_interval_count",
            "currency",
            "is_archived",
            "benefits",
            "spend_threshold",
            "metadata",
        )
        help_texts = {
            "spend_threshold": "Its subscriptions' default: once a period's metered charges not "
            "yet invoiced reach it, they are invoiced and collected at once. Empty: none.",
        }

    def clean(self):
        data = super().clean()
        product = self.instance
        organization = data.get("organization") or getattr(product, "organization", None)
        foreign = [
            b
            for b in data.get("benefits") or ()
            if b.organization_id != getattr(organization, "pk", None)
        ]
        if foreign:
            self.add_error("benefits", "A benefit of another organization.")
        currency = product.currency if product.pk else data.get("currency") or ""
        try:
            catalog.check_spend_threshold(data.get("spend_threshold"), currency.upper())
        except DomainError as exc:
            add_domain_errors(self, exc, {"spend_threshold_amount": "spend_threshold"})
        if product.pk:
            original = Product.objects.get(pk=product.pk)
            changes = {
                name: data[name]
                for name in self.changed_data
                if name in catalog.PRODUCT_FIELDS and name in data
            }
            try:
                catalog.check_product_change(original, changes)
            except DomainError as exc:
                add_domain_errors(self, exc)
        return data


@admin.register(Product)
class ProductAdmin(MeterlineModelAdmin):
    form = ProductForm
    list_display = ("name", "organization", "recurring_interval", "currency", "is_archived")
    list_filter = ("is_archived", "recurring_interval", "currency")
    list_select_related = ("organization",)
    search_fields = ("name",)
    show_full_result_count = False
    inlines = (PriceInline,)
    filter_horizontal = ("benefits",)

    def get_readonly_fields(self, request, obj=None):
        # fixed at creation: the owner, and the currency the prices are in
        return ("created_at", "modified_at") + (("organization", "currency") if obj else ())

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        if change:
            changes = {
                name: data[name] for name in form.changed_data if name in catalog.PRODUCT_FIELDS
            }
            catalog.update_product(Product.objects.get(pk=obj.pk), **changes)
            return
        created = catalog.create_product(
            organization=data["organization"],
            name=data["name"],
            description=data.get("description"),
            currency=data["currency"],
            recurring_interval=data["recurring_interval"],
            recurring_interval_count=data["recurring_interval_count"],
            trial_interval=data.get("trial_interval") or None,
            trial_interval_count=data.get("trial_interval_count"),
            metadata=data.get("metadata"),
            spend_threshold=data.get("spend_threshold"),
            prices=[],
        )
        obj.pk, obj.created_at, obj.modified_at = (
            created.pk,
            created.created_at,
            created.modified_at,
        )
        obj._state.adding = False

    def save_related(self, request, form, formsets, change):
        product = Product.objects.get(pk=form.instance.pk)
        catalog.set_benefits(
            product=product, benefit_ids=[b.pk for b in form.cleaned_data.get("benefits", ())]
        )
        for formset in formsets:
            formset.save_through_catalog(product)


class BenefitForm(forms.ModelForm):
    class Meta:
        model = Benefit
        fields = ("organization", "description", "meter", "units", "rollover", "metadata")

    def clean(self):
        data = super().clean()
        organization, meter = data.get("organization"), data.get("meter")
        if self.instance.pk:
            organization = self.instance.organization
        if organization and meter and meter.organization_id != organization.pk:
            self.add_error("meter", "A meter of another organization.")
        return data


@admin.register(Benefit)
class BenefitAdmin(MeterlineModelAdmin):
    form = BenefitForm
    list_display = ("description", "organization", "meter", "units", "rollover", "is_deleted")
    list_select_related = ("organization", "meter")
    autocomplete_fields = ("meter",)
    search_fields = ("description",)
    show_full_result_count = False

    def get_readonly_fields(self, request, obj=None):
        return ("organization", "is_deleted") if obj else ("is_deleted",)

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        if change:
            changes = {name: data[name] for name in form.changed_data if name != "meter"}
            if "meter" in form.changed_data:
                changes["meter_id"] = data["meter"].pk
            catalog.update_benefit(Benefit.objects.get(pk=obj.pk), **changes)
            return
        created = catalog.create_benefit(
            organization=data["organization"],
            description=data["description"],
            meter_id=data["meter"].pk,
            units=data["units"],
            rollover=data["rollover"],
            metadata=data.get("metadata"),
        )
        obj.pk, obj._state.adding = created.pk, False

    def delete_model(self, request, obj):
        catalog.delete_benefit(obj)

    def delete_queryset(self, request, queryset):
        for benefit in queryset:
            catalog.delete_benefit(benefit)


# the discount service's names for what the form calls otherwise
DISCOUNT_FIELDS = {"product_ids": "products", "currency": "amount"}


class DiscountForm(forms.ModelForm):
    class Meta:
        model = Discount
        fields = (
            "organization",
            "name",
            "code",
            "type",
            "basis_points",
            "amount",
            "duration",
            "duration_in_months",
            "starts_at",
            "ends_at",
            "max_redemptions",
            "products",
            "metadata",
        )
        help_texts = {
            "basis_points": "Percentage discounts, in hundredths of a percent: 1500 is 15 %."
        }

    def service_fields(self) -> dict:
        """The form's values in the discount service's terms (amounts in minor units)."""
        data = self.cleaned_data
        amount = data.get("amount")
        values = {
            name: data.get(name)
            for name in self.Meta.fields
            if name not in ("organization", "amount", "products")
        }
        values["amount"] = to_minor(amount) if amount is not None else None
        values["currency"] = str(amount.currency) if amount is not None else None
        values["product_ids"] = [product.pk for product in data.get("products") or ()]
        return values

    def changes(self) -> dict:
        values = self.service_fields()
        names = {"amount": ("amount", "currency"), "products": ("product_ids",)}
        return {
            key: values[key]
            for name in self.changed_data
            for key in names.get(name, (name,))
            if key in values
        }

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        try:
            if self.instance.pk:
                discounts.check_update(Discount.objects.get(pk=self.instance.pk), self.changes())
            else:
                values = self.service_fields()
                discounts.check_definition(
                    **{key: values[key] for key in discounts.TERMS},
                    starts_at=values["starts_at"],
                    ends_at=values["ends_at"],
                )
                discounts.check_code(data.get("organization"), values["code"])
        except DomainError as exc:
            add_domain_errors(self, exc, DISCOUNT_FIELDS)
        return data


@admin.register(Discount)
class DiscountAdmin(MeterlineModelAdmin):
    form = DiscountForm
    list_display = ("name", "organization", "code", "terms", "duration", "redemptions_count")
    list_filter = ("type", "duration")
    list_select_related = ("organization",)
    search_fields = ("name", "code")
    filter_horizontal = ("products",)
    show_full_result_count = False

    def get_readonly_fields(self, request, obj=None):
        fixed = ("organization",) if obj else ()
        return (*fixed, "redemptions_count", "created_at", "modified_at")

    def save_model(self, request, obj, form, change):
        if change:
            discounts.update_discount(Discount.objects.get(pk=obj.pk), **form.changes())
            return
        values = form.service_fields()
        created = discounts.create_discount(
            organization=form.cleaned_data["organization"], **values
        )
        obj.pk, obj._state.adding = created.pk, False

    @admin.display(description="Terms", ordering="type")
    def terms(self, discount):
        if discount.type == DiscountType.PERCENTAGE:
            return f"{percent(discount.basis_points)} off"
        return f"{money(discount.amount)} off" if discount.amount is not None else "—"

    def save_related(self, request, form, formsets, change):
        """The products went through the discount service with the rest."""

    def delete_model(self, request, obj):
        discounts.delete_discount(obj)

    def delete_queryset(self, request, queryset):
        for discount in queryset:
            discounts.delete_discount(discount)


class TaxRateForm(forms.ModelForm):
    class Meta:
        model = TaxRate
        fields = ("organization", "name", "country", "state", "basis_points", "inclusive")
        help_texts = {"basis_points": "Hundredths of a percent: 2000 is 20 %, 887 is 8.87 %."}

    def clean(self):
        data = super().clean()
        organization = data.get("organization") or getattr(self.instance, "organization", None)
        if self.errors or organization is None:
            return data
        try:
            taxes.check_rate(
                organization=organization,
                country=(data.get("country") or "").upper(),
                state=(data.get("state") or "").upper() or None,
                basis_points=data.get("basis_points"),
                exclude=self.instance if self.instance.pk else None,
            )
        except DomainError as exc:
            add_domain_errors(self, exc)
        return data


@admin.register(TaxRate)
class TaxRateAdmin(MeterlineModelAdmin):
    form = TaxRateForm
    list_display = ("name", "organization", "country", "state", "rate", "inclusive")
    list_filter = ("country", "inclusive")
    list_select_related = ("organization",)
    show_full_result_count = False

    def get_readonly_fields(self, request, obj=None):
        return ("organization",) if obj else ()

    @admin.display(description="Rate", ordering="basis_points")
    def rate(self, tax_rate):
        return percent(tax_rate.basis_points)

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        fields = {name: data.get(name) for name in ("name", "country", "state", "basis_points")}
        fields["inclusive"] = data.get("inclusive", False)
        if change:
            taxes.update_tax_rate(TaxRate.objects.get(pk=obj.pk), **fields)
            return
        created = taxes.create_tax_rate(organization=data["organization"], **fields)
        obj.pk, obj._state.adding = created.pk, False

    def delete_model(self, request, obj):
        taxes.delete_tax_rate(obj)

    def delete_queryset(self, request, queryset):
        for rate in queryset:
            taxes.delete_tax_rate(rate)
