from damoxing.cli import main

main()
