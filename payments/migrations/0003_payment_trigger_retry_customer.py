from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("payments", "0002_payment_permissions"),
    ]

    operations = [
        migrations.AlterField(
            model_name="payment",
            name="trigger",
            field=models.CharField(
                choices=[
                    ("purchase", "Subscription created"),
                    ("subscription_cycle", "Renewal"),
                    ("retry_dunning", "Dunning retry"),
                    ("retry_customer", "Paid by the customer in the portal"),
                    ("retry_payment_method_update", "New payment method"),
                    ("retry_admin", "Retried by staff"),
                ],
                max_length=32,
            ),
        ),
    ]
