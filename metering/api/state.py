"""Metering's section of the customer state: `active_meters` in Polar's CustomerStateMeter
shape (Polar's wire format carries the numbers as JSON floats)."""

from customers.api.state import register_state_section
from metering import customer_meters


def active_meters(customer) -> dict:
    return {
        "active_meters": [
            {
                "id": str(customer_meter.pk),
                "created_at": customer_meter.created_at.isoformat(),
                "modified_at": customer_meter.modified_at.isoformat()
                if customer_meter.modified_at
                else None,
                "meter_id": str(customer_meter.meter_id),
                "consumed_units": float(numbers.consumed_units),
                "credited_units": numbers.credited_units,
                "balance": float(numbers.balance),
            }
            for customer_meter, numbers in customer_meters.active_customer_meters(customer=customer)
        ]
    }


register_state_section(active_meters)
