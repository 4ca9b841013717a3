"""Event lists when the user events live outside PostgreSQL (a store without
`user_events_in_postgres`): PostgreSQL's system events (credits, resets) and the store's user
events as one sequence, for the API's and the admin's pagination."""

from metering import stores


class _Page(list):
    def count(self):
        return len(self)


class MergedEvents:
    """The PostgreSQL queryset and the ClickHouse store as one sequence ordered by timestamp
    and id, for the pagination's `[:cap].count()` and `[offset:offset + limit]`."""

    def __init__(self, queryset, organization_id, criteria: dict, descending: bool):
        self.queryset, self.organization_id = queryset, organization_id
        self.criteria, self.descending = criteria, descending

    def order_by(self, *args):
        return self

    def count(self):
        return self.queryset.count() + stores.current().count_events(
            self.organization_id, self.criteria, cap=10**9
        )

    def __getitem__(self, window: slice):
        end = window.stop
        if window.start is None and end is not None:  # the capped count
            in_pg = self.queryset.order_by()[:end].count()
            return _Page(
                [None]
                * min(
                    end,
                    in_pg
                    + stores.current().count_events(self.organization_id, self.criteria, cap=end),
                )
            )
        pg = list(self.queryset[:end])
        ch = stores.current().list_events(
            self.organization_id, self.criteria, descending=self.descending, limit=end
        )
        merged = sorted(pg + ch, key=lambda e: (e.timestamp, str(e.id)), reverse=self.descending)
        return merged[window]
