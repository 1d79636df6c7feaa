from services.voice.app import main

main()
