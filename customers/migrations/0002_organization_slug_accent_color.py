import django.core.validators
from django.db import migrations, models
from django.utils.text import slugify


def fill_slugs(apps, schema_editor):
    Organization = apps.get_model("customers", "Organization")
    taken = set()
    for organization in Organization.objects.order_by("created_at", "id"):
        base = slugify(organization.name)[:56] or "organization"
        slug, n = base, 1
        while slug in taken:
            n += 1
            slug = f"{base}-{n}"
        taken.add(slug)
        organization.slug = slug
        organization.save(update_fields=["slug"])


class Migration(migrations.Migration):
    dependencies = [("customers", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="organization",
            name="slug",
            field=models.SlugField(blank=True, db_index=False, max_length=64, null=True),
        ),
        migrations.AddField(
            model_name="organization",
            name="accent_color",
            field=models.CharField(
                default="#2563eb",
                max_length=7,
                validators=[
                    django.core.validators.RegexValidator(
                        "^#[0-9a-fA-F]{6}\\Z", "Enter a colour as #rrggbb, e.g. #2563eb."
                    )
                ],
            ),
        ),
        migrations.RunPython(fill_slugs, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="organization",
            name="slug",
            field=models.SlugField(blank=True, max_length=64, unique=True),
        ),
    ]
