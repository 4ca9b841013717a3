"""Django's PostgreSQL backend, connected to the embedded server under the data folder.

The settings choose it when DATABASE_URL is unset and record only the data folder
(`DATABASES["default"]["EMBEDDED_DATA_DIR"]`). The server's address is resolved by the first
connection of a process, which starts the server if it is not running (and is remembered for
the process's later connections). Importing the settings, `manage.py --help` or `check`
therefore start nothing. Every connection goes through here, including the one to the
`postgres` maintenance database with which the test runner creates its test database, so
whichever comes first starts the server.
"""

from pathlib import Path

from django.db.backends.postgresql import base, client

from config.embedded import embedded_connection


def _server_settings(settings_dict: dict) -> dict:
    server = embedded_connection(Path(settings_dict["EMBEDDED_DATA_DIR"]))
    return {**settings_dict, "HOST": server["host"], "PORT": server["port"], "USER": server["user"]}


class DatabaseClient(client.DatabaseClient):
    """`manage.py dbshell`: psql connects by itself, so it is given the server's address."""

    @classmethod
    def settings_to_cmd_args_env(cls, settings_dict, parameters):
        return super().settings_to_cmd_args_env(_server_settings(settings_dict), parameters)


class DatabaseWrapper(base.DatabaseWrapper):
    client_class = DatabaseClient

    def get_connection_params(self):
        params = super().get_connection_params()
        server = embedded_connection(Path(self.settings_dict["EMBEDDED_DATA_DIR"]))
        return {**params, **server}
