# Products, prices, subscriptions and invoices arrive with the billing issue (spec/billing.md).
