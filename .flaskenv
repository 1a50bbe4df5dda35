# Read by the `flask` command (python-dotenv): lets `flask <command>` work from the repository root.
FLASK_APP=wsgi
