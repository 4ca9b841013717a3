from django.core.management.base import BaseCommand

from customers.tokens import create_token


class Command(BaseCommand):
    help = (
        "Create an organization API token (and the organization if missing); prints only the token."
    )

    def add_arguments(self, parser):
        parser.add_argument("--org", required=True, help="organization name")
        parser.add_argument("--name", required=True, help="a label for the token")

    def handle(self, *args, org, name, **options):
        _, secret = create_token(organization_name=org, label=name)
        self.stdout.write(secret)
