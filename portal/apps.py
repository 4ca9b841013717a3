from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "portal"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Billing sits below the portal and never imports it: the portal plugs billing's
        # numbers into its own extension points.
        from portal import billing
        from portal.extensions import Section, registry

        registry.charge_estimators.append(billing.estimate_charges)
        registry.period_providers.append(billing.current_periods)
        registry.credit_grant_providers.append(billing.credit_grants)
        registry.sections.extend(
            [
                Section("Subscriptions", "portal:subscriptions"),
                Section("Invoices", "portal:invoices"),
                Section("Payment method", "portal:payment-method"),
            ]
        )
