# The token starts here (a board runs main.py after boot.py).
import app
import board

app.run(board.make())
