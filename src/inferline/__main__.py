from inferline.cli.main import app

app()
