# Products, prices, subscriptions and invoices arrive with the billing work; no models yet.
